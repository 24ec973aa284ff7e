"""Central (lab) side: the backbone f, training g and v, the paper's experiments, and the fleet simulation."""
