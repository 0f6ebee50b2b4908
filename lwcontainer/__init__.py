"""lwcontainer: build light-weight CMS analysis images with CVMFS mounted while building."""

__version__ = "0.1.0"
