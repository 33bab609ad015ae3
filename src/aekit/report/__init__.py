"""What a run looks like to a person: figures, the HTML report, tables, comparisons."""
