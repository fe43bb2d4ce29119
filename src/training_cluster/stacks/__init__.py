from .cluster import TrainingClusterStack

__all__ = ["TrainingClusterStack"]
