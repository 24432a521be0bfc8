"""kvis: render foamToVTK time series into H.264 movies, in parallel under MPI."""

__version__ = "0.1.0"
