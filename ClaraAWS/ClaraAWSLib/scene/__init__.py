"""Ring 2, the scene: volume nodes in, segmentation nodes out. Imports ``slicer`` and ``vtk``, never ``qt``.

``logic.ClaraAWSLogic`` orchestrates (its steps in the ``logic_*`` modules); ``write_rule`` is the one rule
every AI change to a segment follows, ``undo`` its undo, ``edit`` the transaction around it;
``export``/``importer`` move voxels in and out.
"""
