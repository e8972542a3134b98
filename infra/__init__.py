"""Composition: the stack config in, the platform and its components out.

This is the only package that knows which platform was chosen.
"""
