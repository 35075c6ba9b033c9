"""OpenR serve: an OpenAI-compatible reasoning server with PRM-guided search."""

__version__ = "0.1.0"
