using System.Globalization;
using System.Net;
using System.Net.Sockets;
using Modular.Abstractions.WireGuard;
using Modular.Core.Config;

namespace Modular.Core.Engine;

/// <summary>What the agent asks of the host before it starts (a seam: tests answer for the host).</summary>
public interface IHostProbe
{
    /// <summary>The process's effective capability set (CapEff in /proc/self/status); null when it cannot be read.</summary>
    ulong? EffectiveCapabilities();

    /// <summary>Null when /dev/net/tun can be opened for reading and writing, else why not.</summary>
    string? TunDeviceProblem();

    /// <summary>Whether a UDP socket can bind <paramref name="port"/> on every IPv4 address.</summary>
    bool UdpPortFree(int port);
}

/// <summary>
/// Checks what `modular up` needs from the host BEFORE it registers (issue 13: started without root, the agent used up a
/// setup key and joined everyone's map, then could not create its interface): CAP_NET_ADMIN (interface, addresses,
/// routes), /dev/net/tun in userspace mode, and the listen port (kernel mode also the ICE port above it). What is
/// missing comes back as one line, so the agent can exit 1 with it.
/// </summary>
public static class StartupPreflight
{
    /// <summary>CAP_NET_ADMIN's bit in the capability sets (linux/capability.h).</summary>
    public const int CapNetAdmin = 12;

    /// <summary>Null when the host gives the agent what its config needs, else one line naming everything missing.</summary>
    public static string? Check(AgentConfig config, IHostProbe probe)
    {
        var missing = new List<string>();
        if (probe.EffectiveCapabilities() is { } caps && (caps & (1UL << CapNetAdmin)) == 0)
        {
            missing.Add("CAP_NET_ADMIN (run it as root, or give the service AmbientCapabilities=CAP_NET_ADMIN)");
        }

        if (config.Interface.Mode == WgInterfaceMode.Userspace && probe.TunDeviceProblem() is { } tun)
        {
            missing.Add($"/dev/net/tun ({tun})");
        }

        var port = config.Interface.Port;
        if (port > 0)
        {
            int[] ports = config.Interface.Mode == WgInterfaceMode.Userspace ? [port] : [port, port + 1];
            foreach (var p in ports.Where(p => p <= IPEndPoint.MaxPort && !probe.UdpPortFree(p)))
            {
                missing.Add(string.Create(CultureInfo.InvariantCulture, $"UDP port {p} (in use; set interface.port to a free one)"));
            }
        }

        return missing.Count == 0
            ? null
            : $"cannot start: the agent needs {string.Join("; ", missing)}";
    }
}

/// <summary>The Linux host as <see cref="IHostProbe"/> sees it.</summary>
public sealed class LinuxHostProbe : IHostProbe
{
    public static LinuxHostProbe Instance { get; } = new();

    public ulong? EffectiveCapabilities()
    {
        try
        {
            var line = File.ReadLines("/proc/self/status").FirstOrDefault(l => l.StartsWith("CapEff:", StringComparison.Ordinal));
            return line is not null && ulong.TryParse(line["CapEff:".Length..].Trim(), NumberStyles.HexNumber, CultureInfo.InvariantCulture, out var caps)
                ? caps
                : null;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return null; // not Linux's /proc: let creating the interface say what is wrong
        }
    }

    public string? TunDeviceProblem()
    {
        try
        {
            // Shared: .NET emulates FileShare.None with flock(LOCK_EX) on Unix, and the lock on the one device node makes
            // another agent's check at the same instant fail. This open only proves access.
            using var tun = new FileStream("/dev/net/tun", FileMode.Open, FileAccess.ReadWrite, FileShare.ReadWrite);
            return null;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return e is FileNotFoundException or DirectoryNotFoundException ? "missing: load the tun module (modprobe tun)" : e.Message;
        }
    }

    public bool UdpPortFree(int port)
    {
        try
        {
            using var socket = new Socket(AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp);
            // Two agents' checks at the same instant must not fail each other; a socket the agent holds (bound
            // without SO_REUSEADDR, as WireGuard's and the ICE socket are) still refuses this bind.
            socket.SetSocketOption(SocketOptionLevel.Socket, SocketOptionName.ReuseAddress, true);
            socket.Bind(new IPEndPoint(IPAddress.Any, port));
            return true;
        }
        catch (SocketException e) when (e.SocketErrorCode == SocketError.AddressAlreadyInUse)
        {
            return false;
        }
    }
}
