"""humantune: fine-tune diffusion models so they draw humans better, and measure it."""

__version__ = "0.1.0"
