"""
Logging inside the bus: C{bridge.py} routes stdlib logging (apps, pika) into
twisted.logger; C{capture.py} collects what one handler call logs; C{errorlog.py}
limits how often one app's error type is logged; C{jsonformat.py} writes
C{bus.log_format = "json"}.
"""
