"""The kiosk page on the node's screen: live emotion, status, privacy controls, operator page.

The node's service starts it with ``start_kiosk(state, config.kiosk, store_path, stop_event)``
and calls ``handle.stop()`` at shutdown. Everything the page needs (HTML, CSS, JavaScript) ships in
``static/`` inside the package; nothing is loaded from the network.
"""

from edge_node.kiosk.server import KioskHandle, start_kiosk

__all__ = ["KioskHandle", "start_kiosk"]
