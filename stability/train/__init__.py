"""Training: the trainer, the loss scaler, the divergence doctor, the lr search and the
loss-scaling experiment."""
