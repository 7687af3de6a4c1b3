"""hte: multilevel models of how a randomized treatment's effect varies across people."""
