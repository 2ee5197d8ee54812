using System.Globalization;

namespace Modular.Testing;

/// <summary>Reads a Prometheus text exposition (what the agent's and the server's <c>/metrics</c> return) in tests.</summary>
public static class PrometheusText
{
    /// <summary>The value of one series, written as in the exposition (<c>name</c> or <c>name{label="value"}</c>).</summary>
    /// <exception cref="InvalidOperationException">The series is not in <paramref name="exposition"/> (with the exposition, to see why).</exception>
    public static double Value(string exposition, string series)
    {
        foreach (var line in exposition.Split('\n'))
        {
            if (line.StartsWith(series + " ", StringComparison.Ordinal))
            {
                return double.Parse(line[(series.Length + 1)..], CultureInfo.InvariantCulture);
            }
        }

        throw new InvalidOperationException($"no series {series} in:\n{exposition}");
    }
}
