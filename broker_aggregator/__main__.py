from broker_aggregator.cli import main

main()
