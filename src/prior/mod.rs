//! Score-based priors (candle): SDEs, score network, training, checkpoints, sampling.
