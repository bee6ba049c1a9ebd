"""The data plane: Zarr inputs (twins, ERA5), normalisation, observations, streaming, analysis writer."""

import warnings

# Zarr 3 warns that consolidated metadata is not in its spec; xarray and every reader we
# target use it, and the writers consolidate exactly once, at the end.
warnings.filterwarnings("ignore", message="Consolidated metadata is currently not part")
