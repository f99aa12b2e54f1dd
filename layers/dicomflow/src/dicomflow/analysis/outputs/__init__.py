"""What an analysis produces besides results.json: DICOM SEG, a TID 1500 SR and a PNG preview."""
