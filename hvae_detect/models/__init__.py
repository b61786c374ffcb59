"""The hierarchical VAE families (VAE, LVAE, BIVA), their building blocks and architectures."""
