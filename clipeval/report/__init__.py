"""Everything computed from stored records: effective robustness, baselines, figures, tables, pages."""
