"""Syncs back into the CRMs and the ERP: declared, diff-based, with field ownership and no loops."""
