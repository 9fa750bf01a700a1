"""Ring 1, the pure core: typed errors, image grids and geometry, the NIfTI codec, multipart bodies and
progress stages. Imports nothing of ClaraAWS outside ``core`` and neither ``slicer``, ``vtk`` nor ``qt``."""
