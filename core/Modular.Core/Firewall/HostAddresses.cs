using System.Net;
using System.Net.NetworkInformation;

namespace Modular.Core.Firewall;

/// <summary>This host's own addresses, for <see cref="StatefulFirewall.UpdateHostAddresses"/>.</summary>
public static class HostAddresses
{
    /// <summary>
    /// Every unicast address of every interface, up or down (an address is still the host's while its link is
    /// down), loopback and the overlay interface included: any of them as a destination means this host.
    /// Empty when the interfaces cannot be read.
    /// </summary>
    public static IReadOnlyList<IPAddress> Read()
    {
        var addresses = new List<IPAddress>();
        NetworkInterface[] interfaces;
        try
        {
            interfaces = NetworkInterface.GetAllNetworkInterfaces();
        }
        catch (NetworkInformationException)
        {
            return addresses;
        }

        foreach (var nic in interfaces)
        {
            foreach (var unicast in nic.GetIPProperties().UnicastAddresses)
            {
                // Scope IDs are not part of a packet's address.
                var address = unicast.Address;
                addresses.Add(address.IsIPv6LinkLocal ? new IPAddress(address.GetAddressBytes()) : address);
            }
        }

        return addresses;
    }
}
