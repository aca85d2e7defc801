"""Version 1 of liferaft's protocol (protobuf package `liferaft.v1`): generated stubs only.

Everything else in this folder is written by `python proto/generate.py`; edit the .proto files
under proto/liferaft_proto/v1/ instead.
"""
