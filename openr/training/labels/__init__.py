"""Automatic step labels for PRM training: Monte Carlo rollouts from solution
prefixes (`monte_carlo`), the two labellers built on them (`shepherd`, `omegaprm`)
and the driver that writes a labelled set (`pipeline`)."""
