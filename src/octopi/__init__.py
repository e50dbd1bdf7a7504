"""octopi: 3D particle-picking networks for cryo-ET on copick projects."""

__version__ = "0.1.0"
