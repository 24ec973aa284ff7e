from edge_node.cli import main

main()
