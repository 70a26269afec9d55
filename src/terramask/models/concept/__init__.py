"""Concept prompts: find every instance of a class from text phrases or exemplars.

``base`` holds the protocol shared by the detector + SAM route, SAM 3 and find-similar.
"""
