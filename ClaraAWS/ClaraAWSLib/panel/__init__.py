"""Ring 3, the panel: background jobs, the processing state machine, settings, model choices and the calls
into the running Slicer application. The only ring that may import ``qt``; no protocol or geometry code."""
