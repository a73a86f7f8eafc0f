#!/usr/bin/python3
"""
hubspot_mock.py - start the local mock of the HubSpot CRM REST API that
erpcrm's tests run against.

    python3 hubspot_mock.py --port 0 --port-file FILE
        [--tls-cert CERT --tls-key KEY] [--token T ...] [--seed N] [--verbose]

It prints "listening on PORT" and writes the port to FILE once it listens.
The mock itself is the package hsmock beside this file: hsmock/__init__.py
says where each part lives, hsmock/control.py documents the control API
under /_mock/, and hsmock/handler.py the order in which faults apply.
"""

import sys

from hsmock.server import main

if __name__ == "__main__":
    sys.exit(main())
