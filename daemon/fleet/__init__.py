"""The fleet dispatcher (`mulletd fleet`): portfolio obligations split across site daemons."""
