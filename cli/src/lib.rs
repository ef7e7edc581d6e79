//! rustre: the operator's and user's command-line tool
