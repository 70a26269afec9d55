"""``terramask find``: every instance of a class over a whole scene, from exemplars
(find-similar) or text phrases (a concept backend), through the tiled scene pipeline."""
