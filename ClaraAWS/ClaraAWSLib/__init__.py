"""ClaraAWS: AI-assisted segmentation with NVIDIA Clara AIAA servers, in 3D Slicer and on the command line.

The pure core (client, image encoding, AWS discovery, reference server, CLI) imports neither
``slicer`` nor ``vtk`` nor ``qt``. ``ClaraAWSLogic`` needs Slicer's MRML (a Slicer application or the
``slicer-core`` wheel) and is imported on first use.
"""

__version__ = "0.1.0"

__all__ = ["ClaraAWSLogic", "__version__"]


def __getattr__(name):
    if name == "ClaraAWSLogic":
        from .scene.logic import ClaraAWSLogic

        return ClaraAWSLogic
    raise AttributeError(f"module 'ClaraAWSLib' has no attribute {name!r}")
