"""Side-by-side benchmarks of channels_nats, channels_redis and raw nats-py."""
