"""Large areas: a whole georeferenced scene translated tile by tile without visible seams.

    raster     scenes in (GeoTIFF through rasterio, XYZ folders), lat/lon of tile centres
               (pyproj), GeoTIFF / PNG preview / XYZ out
    plan       the overlapping tile grid, generation order (wavefront), seam weights
    sidecar    the resumable state beside the output
    translate  the loop over tiles (sampler's translate / in-painting) and the assembly

The command is `earthmapper translate-area` (cli/translate_area.py); docs/large_areas.md.
"""
