"""Storage: atomic writes, finding and downloading files, the safe EDM-pickle importer and our file formats."""
