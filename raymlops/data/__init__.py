"""The data stage: sources -> validation -> versioned snapshot -> splits -> fitted features."""
