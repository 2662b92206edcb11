"""Split inference: one model's contiguous unit ranges on several edge devices, joined by a network link.

``links`` (network link profiles: bandwidth, RTT; data in ``profiles/links/*.yaml``) and ``planner``
(``edgevit split plan``: which device runs which units, or "don't split"). Import the modules directly.
"""
