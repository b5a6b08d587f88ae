"""Training: the trainer, the loss scaler, the divergence doctor, the lr search and its map,
and the loss-scaling experiment."""
