"""What a command shows on the terminal, while the libraries' logging goes to the study's log file.

`routing`: the console session (--verbose/--quiet): our lines to the terminal and the log, the libraries'
to the log only.
`live`: the live table of running trials, redrawn in place on a terminal.
"""
