"""The ble driver: BTHome, Ruuvi and pvvx advertisements, and GATT devices."""
