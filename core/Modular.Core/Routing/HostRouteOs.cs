using System.Net;
using System.Net.Sockets;
using Modular.Abstractions.WireGuard;
using Modular.Core.Os;

namespace Modular.Core.Routing;

/// <summary>The real <see cref="IRouteOs"/>: iproute2 through <see cref="HostCommand"/>, sysctls under /proc/sys.</summary>
public sealed class HostRouteOs : IRouteOs
{
    public async Task<bool> AddRouteAsync(OsRoute route, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(route);
        var result = await HostCommand.RunAsync("ip", ["-4", "route", "add", .. route.Arguments], cancellationToken: cancellationToken);
        if (result.Succeeded)
        {
            return true;
        }

        if (result.Error.Contains("File exists", StringComparison.Ordinal))
        {
            return false;
        }

        throw new IOException($"ip route add {route}: {result.Error.Trim()}");
    }

    public async Task DeleteRouteAsync(OsRoute route, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(route);
        var result = await HostCommand.RunAsync("ip", ["-4", "route", "del", .. route.Arguments], cancellationToken: cancellationToken);
        // Gone already (the interface went, or someone removed it) is what we wanted.
        if (!result.Succeeded && !result.Error.Contains("No such process", StringComparison.Ordinal) && !result.Error.Contains("Cannot find device", StringComparison.Ordinal))
        {
            throw new IOException($"ip route del {route}: {result.Error.Trim()}");
        }
    }

    public Task AddRuleAsync(OsRule rule, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(rule);
        return HostCommand.RunCheckedAsync("ip", ["-4", "rule", "add", .. rule.Arguments], cancellationToken: cancellationToken);
    }

    public async Task<bool> DeleteRuleAsync(OsRule rule, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(rule);
        var result = await HostCommand.RunAsync("ip", ["-4", "rule", "del", .. rule.Arguments], cancellationToken: cancellationToken);
        return result.Succeeded;
    }

    public async Task<string> WriteSysctlAsync(string key, string value, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(key);
        var path = "/proc/sys/" + key.Replace('.', '/');
        var previous = (await File.ReadAllTextAsync(path, cancellationToken)).Trim();
        if (previous != value)
        {
            await File.WriteAllTextAsync(path, value, cancellationToken);
        }

        return previous;
    }

    public async Task SetFwmarkAsync(IWgIface iface, uint mark, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(iface);
        await iface.SetFwmarkAsync(mark, cancellationToken);
    }

    public async Task<IReadOnlyList<IPAddress>> ResolveAsync(string host, CancellationToken cancellationToken)
    {
        if (IPAddress.TryParse(host, out var literal))
        {
            return literal.AddressFamily == AddressFamily.InterNetwork ? [literal] : [];
        }

        var addresses = await Dns.GetHostAddressesAsync(host, AddressFamily.InterNetwork, cancellationToken);
        return addresses;
    }
}
