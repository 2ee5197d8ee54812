using System.Net;
using System.Net.NetworkInformation;
using System.Net.Sockets;

namespace Modular.Core.Ice;

/// <summary>Finds this machine's candidates for the ICE port: its interface addresses (host).</summary>
public static class CandidateGatherer
{
    /// <summary>
    /// IPv4 addresses of every interface that is up, except loopback, the WireGuard interface itself
    /// and anything inside the overlay (a tunnel must never be carried over itself).
    /// </summary>
    public static IReadOnlyList<IceCandidate> HostCandidates(int port, string wireGuardInterface, IPNetwork overlay)
    {
        var candidates = new List<IceCandidate>();
        NetworkInterface[] interfaces;
        try
        {
            interfaces = NetworkInterface.GetAllNetworkInterfaces();
        }
        catch (NetworkInformationException)
        {
            return candidates;
        }

        foreach (var nic in interfaces)
        {
            if (nic.OperationalStatus is OperationalStatus.Down || nic.NetworkInterfaceType == NetworkInterfaceType.Loopback
                || string.Equals(nic.Name, wireGuardInterface, StringComparison.Ordinal))
            {
                continue;
            }

            foreach (var unicast in nic.GetIPProperties().UnicastAddresses)
            {
                var address = unicast.Address;
                if (address.AddressFamily != AddressFamily.InterNetwork || IPAddress.IsLoopback(address) || overlay.Contains(address)
                    || IsLinkLocal(address))
                {
                    continue;
                }

                candidates.Add(new IceCandidate(CandidateType.Host, new IPEndPoint(address, port)));
            }
        }

        return candidates;
    }

    private static bool IsLinkLocal(IPAddress address)
    {
        Span<byte> bytes = stackalloc byte[4];
        address.TryWriteBytes(bytes, out _);
        return bytes[0] == 169 && bytes[1] == 254;
    }
}
