"""One ITK file read or write at a time in this process.

ITK's image I/O leans on third-party libraries (NIfTI, GDCM, NRRD) with global state, and SimpleITK
does not promise that two threads may read or write files at once: reading images concurrently may
crash the process (SimpleITK/SimpleITK#74, still open; #805, a double free about once in a hundred
threaded DICOM reads; #1466, GDCM's series scan). ClaraAWS reads and writes files from worker threads
(batch cases, uploads, results) and the reference server from its request threads, in one process when
a test or a demo runs both. Every SimpleITK file call therefore runs under this lock; filters on
images in memory do not need it. A read of a CT takes a fraction of a second, far less than its upload.
"""

from __future__ import annotations

import threading

#: Held around every SimpleITK file read and write (re-entrant: a write may read its file back).
ITK_FILE_IO = threading.RLock()
