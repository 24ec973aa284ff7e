"""Fleet simulation: a broker, the aggregator and N real edge nodes on synthetic subjects."""
