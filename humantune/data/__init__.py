"""Data: the mannequin world, real-data loaders, keypoint formats and condition rendering."""
