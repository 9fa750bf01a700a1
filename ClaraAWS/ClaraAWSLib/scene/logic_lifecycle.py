"""The logic's sessions and undo history follow the scene: a removed node or a closed scene forgets them.

Mixed into ``ClaraAWSLogic``; ``cleanup()`` ends it all at module exit.
"""

from __future__ import annotations

import weakref
from typing import Dict

import vtk

#: How long cleanup() (module exit) waits for server sessions to be deleted; they expire on the server anyway.
SESSION_CLOSE_WAIT_SECONDS = 2.0

#: The scene callbacks of every logic, held here for as long as a scene may call them. VTK reports a Python
#: observer to the cyclic garbage collector as part of the object it observes; a scene the collector frees
#: would otherwise have its callbacks cleared first and then call them while it closes (a crash).
_scene_callbacks: Dict[int, tuple] = {}


def _remove_observers(scene_reference, tags, callbacks_key: int) -> None:
    scene = scene_reference()
    if scene is not None:
        for tag in tags:
            scene.RemoveObserver(tag)
        _scene_callbacks.pop(callbacks_key, None)
    # else: the scene is being freed with its observers still attached; they stay callable until it is gone.


class SceneLifecycle:
    def _observeScene(self) -> None:
        this = weakref.ref(self)  # the scene must not keep the logic alive

        @vtk.calldata_type(vtk.VTK_OBJECT)
        def onNodeRemoved(caller, event, node):
            logic = this()
            if logic is not None and node is not None:
                logic._forgetNode(node)

        def onSceneClose(caller, event):
            logic = this()
            if logic is not None:
                logic._sessions.close_all()
                logic._undo.clear()
            if caller is None:  # the scene is being destroyed: it drops its observers right after this event
                _scene_callbacks.pop(key, None)

        scene = self.scene
        callbacks = (onNodeRemoved, onSceneClose)
        key = id(callbacks)
        _scene_callbacks[key] = callbacks
        self._observations = [
            scene.AddObserver(scene.NodeRemovedEvent, onNodeRemoved),
            scene.AddObserver(scene.StartCloseEvent, onSceneClose),
        ]
        # A logic dropped without cleanup() must not leave Python callbacks on a scene that outlives it.
        self._forgetObservers = weakref.finalize(self, _remove_observers, weakref.ref(scene), list(self._observations), key)
        self._forgetObservers.atexit = False

    def _forgetNode(self, node) -> None:
        node_id = node.GetID()
        if node_id in self._sessions:
            self._sessions.close(node_id)
        if node.IsA("vtkMRMLSegmentationNode"):
            self._undo.forget(node_id)

    def cleanup(self) -> None:
        """Close sessions and the client, drop undo history and stop observing the scene."""
        self._forgetObservers()
        self._observations = []
        self._sessions.close_all()
        self._sessionCloser.wait(timeout=SESSION_CLOSE_WAIT_SECONDS)
        self._undo.clear()
        if self.client is not None:
            self.client.close()
        self.client = None
