using System.Net;
using Modular.Abstractions.WireGuard;
using Modular.Core.Routing;

namespace Modular.Core.Tests.Routing;

/// <summary>The OS as lists of strings; records every call in order.</summary>
internal sealed class RecordingRouteOs : IRouteOs
{
    public List<string> Routes { get; } = [];

    public HashSet<string> Foreign { get; } = [];

    public List<string> Deleted { get; } = [];

    public List<string> Rules { get; } = [];

    public List<string> Log { get; } = [];

    public Dictionary<string, string> Sysctls { get; } = [];

    public uint Mark { get; private set; }

    public Task<bool> AddRouteAsync(OsRoute route, CancellationToken cancellationToken)
    {
        Log.Add($"route add {route}");
        if (Foreign.Contains(route.ToString()) || Routes.Contains(route.ToString()))
        {
            return Task.FromResult(false);
        }

        Routes.Add(route.ToString());
        return Task.FromResult(true);
    }

    public Task DeleteRouteAsync(OsRoute route, CancellationToken cancellationToken)
    {
        Log.Add($"route del {route}");
        Deleted.Add(route.ToString());
        Routes.Remove(route.ToString());
        return Task.CompletedTask;
    }

    public Task AddRuleAsync(OsRule rule, CancellationToken cancellationToken)
    {
        Log.Add($"rule add {rule}");
        Rules.Add(rule.ToString());
        return Task.CompletedTask;
    }

    public Task<bool> DeleteRuleAsync(OsRule rule, CancellationToken cancellationToken)
    {
        Log.Add($"rule del {rule}");
        return Task.FromResult(Rules.Remove(rule.ToString()));
    }

    public Task<string> WriteSysctlAsync(string key, string value, CancellationToken cancellationToken)
    {
        Log.Add($"sysctl {key}={value}");
        var previous = Sysctls.GetValueOrDefault(key, "0");
        Sysctls[key] = value;
        return Task.FromResult(previous);
    }

    public Task SetFwmarkAsync(IWgIface iface, uint mark, CancellationToken cancellationToken)
    {
        Log.Add($"mark {mark}");
        Mark = mark;
        return Task.CompletedTask;
    }

    public Task<IReadOnlyList<IPAddress>> ResolveAsync(string host, CancellationToken cancellationToken)
        => Task.FromResult<IReadOnlyList<IPAddress>>(IPAddress.TryParse(host, out var literal) ? [literal] : host == "mgmt.example" ? [IPAddress.Parse("192.0.2.1")] : []);
}
