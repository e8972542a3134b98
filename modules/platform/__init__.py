"""Platform targets behind one contract (`contract.Platform`)."""
