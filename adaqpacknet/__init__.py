"""Ada-QPacknet: adaptive pruning with bit-width reduction for continual learning."""
