"""Full-duplex interaction evaluation: Full-Duplex-Bench's v1 / v1.5 metrics and Voice Activity
Projection's shift/hold events, on two-channel conversations (the user's stream and the model's)."""
