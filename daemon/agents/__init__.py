"""Edge agents (`mulletd agent asic|gpu`): a mining group's or an AI node's controller on protocol v1."""
