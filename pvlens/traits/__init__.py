"""Traits: the trait file format (instruction pairs, questions, judge rubric), the shipped traits, and the generator
that writes a new trait file from a one-paragraph description."""
