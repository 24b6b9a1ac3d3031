"""ip_match: auto-discovery by public IP that fails closed.

The feature behind the incident this server exists for. Devices announce themselves
(``announcements``), users in the same household see them and ask to link them
(``offers``), the device shows a code the user types back (confirmation), and the link
completes on the device's next announce through ``link_service.link_device`` only.
``eligibility`` re-checks the address, the kill switch, the anomaly ``breaker`` and the
household cap at every step. ``api`` and ``web`` are thin views over these services.
"""
