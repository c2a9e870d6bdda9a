"""Built-in demo data: the scripted Northwind Robotics support-assistant traffic (northwind.json)."""
