"""Thin CLI modules: parse options, call one core function, render the result."""
